// End-to-end tests of the `bucketd` sidecar: start the real binary on a free loopback port
// with a manual clock, drive it with an HTTP client, stop it with SIGTERM.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
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

constexpr int64_t kDayMs = 24 * 3600 * 1000;
constexpr int64_t kStartMs = 1767225600000;  // kSidecarStart

struct TempDir {
  fs::path path;
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "bucketd-server-test-XXXXXX").string();
    path = mkdtemp(templ.data());
  }
  ~TempDir() { fs::remove_all(path); }
};

using Server = bucketd::testing::Sidecar;

// A parsed response body; keeps the parser alive with the document.
struct Json {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  explicit Json(const std::string& text) { REQUIRE(parser.parse(text).get(root) == 0); }
  simdjson::dom::element operator[](std::string_view key) { return root[key].value(); }
};

int64_t Int(simdjson::dom::element e) { return e.get_int64().value(); }
std::string Str(simdjson::dom::element e) { return std::string(e.get_string().value()); }

void RequireError(const httplib::Result& res, int http_status, std::string_view code,
                  std::string_view field = "") {
  REQUIRE(res);
  INFO(res->body);
  REQUIRE(res->status == http_status);
  Json body(res->body);
  CHECK(Str(body["error"]["code"]) == code);
  if (!field.empty()) CHECK(Str(body["error"]["field"]) == field);
}

const char* kPowerUsers =
    R"({"id":"power","name":"Power","criteria":{"type":"event","eventName":"used",)"
    R"("check":"count","operator":"gte","value":2,"within":"1d"}})";

httplib::Result Post(httplib::Client& c, const std::string& path, const std::string& body) {
  return c.Post(path.c_str(), body, "application/json");
}

std::string Events(int users, const std::string& event, int first_user = 100) {
  std::string body = "[";
  for (int u = 0; u < users; ++u) {
    for (int k = 0; k < 2; ++k) {
      if (body.size() > 1) body += ",";
      body += R"({"userId":"user-)" + std::to_string(first_user + u) + R"(","event":")" + event +
              R"("})";
    }
  }
  return body + "]";
}

}  // namespace

TEST_CASE("server: buckets, events, members and transitions end to end", "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();

  auto res = Post(c, "/v1/buckets", kPowerUsers);
  REQUIRE(res->status == 201);
  CHECK(Str(Json(res->body)["id"]) == "power");
  RequireError(Post(c, "/v1/buckets", kPowerUsers), 409, "already_exists");
  res = c.Put("/v1/buckets/power", kPowerUsers, "application/json");
  CHECK(res->status == 200);
  res =
      c.Put("/v1/buckets/vip", R"({"id":"vip","name":"VIP","kind":"manual"})", "application/json");
  REQUIRE(res->status == 201);
  CHECK(Str(Json(res->body)["id"]) == "vip");
  // The path's id fills in a body without one.
  res = c.Put("/v1/buckets/vip2", R"({"name":"VIP 2","kind":"manual"})", "application/json");
  CHECK(res->status == 201);
  RequireError(c.Put("/v1/buckets/vip3", R"({"id":"other","kind":"manual"})", "application/json"),
               400, "invalid_argument", "id");

  res = Post(c, "/v1/events", Events(25, "used"));
  REQUIRE(res->status == 200);
  {
    Json body(res->body);
    CHECK(Int(body["accepted"]) == 50);
    CHECK(Int(body["transitions"]) == 25);
    CHECK(body["rejected"].get_array().value().size() == 0);
  }

  res = c.Get("/v1/buckets/power");
  REQUIRE(res->status == 200);
  CHECK(Int(Json(res->body)["counts"]["active"]) == 25);
  res = c.Get("/v1/buckets");
  CHECK(Json(res->body)["buckets"].get_array().value().size() >= 2);
  CHECK(Int(Json(c.Get("/v1/buckets/power/count")->body)["count"]) == 25);

  // Members, 10 a page, to the end.
  std::vector<std::string> members;
  std::string cursor;
  for (int page = 0; page < 10; ++page) {
    std::string path = "/v1/buckets/power/members?limit=10";
    if (!cursor.empty()) path += "&cursor=" + cursor;
    res = c.Get(path.c_str());
    REQUIRE(res->status == 200);
    Json body(res->body);
    simdjson::dom::array page_members = body["members"].get_array().value();
    for (auto m : page_members) members.push_back(Str(m["userId"]));
    if (body["cursor"].is_null()) break;
    cursor = Str(body["cursor"]);
  }
  REQUIRE(members.size() == 25);
  CHECK(members.front() == "user-100");
  CHECK(members.back() == "user-124");
  CHECK(std::is_sorted(members.begin(), members.end()));

  res = c.Get("/v1/buckets/power/members/user-100");
  REQUIRE(res->status == 200);
  CHECK(Str(Json(res->body)["source"]) == "event");
  RequireError(c.Get("/v1/buckets/power/members/nobody"), 404, "not_found");

  // The stream, then the window closing a day later.
  res = c.Get("/v1/transitions?after=0&limit=5");
  REQUIRE(res->status == 200);
  {
    Json body(res->body);
    auto list = body["transitions"].get_array().value();
    REQUIRE(list.size() == 5);
    auto first = list.at(0).value();
    CHECK(Int(first["seq"]) == 1);
    CHECK(Str(first["name"]) == "bucket:entered:power");
    CHECK(Str(first["kind"]) == "entered");
    CHECK(Str(first["at"]) == "2026-01-01T00:00:00.000Z");
    CHECK(Str(first["idempotencyKey"]) == "bucket:power:user-100:entered:1");
    CHECK(Int(body["next"]) == 5);
  }
  res = Post(c, "/v1/clock", R"({"now":")" + std::string("2026-01-02T00:00:00.001Z") + R"("})");
  REQUIRE(res->status == 200);
  CHECK(Int(Json(res->body)["transitions"]) == 25);
  res = c.Get("/v1/transitions?after=25&limit=1");
  {
    Json body(res->body);
    auto left = body["transitions"].at(0).value();
    CHECK(Str(left["kind"]) == "left");
    CHECK(Str(left["reason"]) == "criteria");
  }
  CHECK(Int(Json(c.Get("/v1/buckets/power/count")->body)["count"]) == 0);
  res = c.Get("/v1/buckets/power/metrics");
  {
    Json body(res->body);
    CHECK(Int(body["entered"]) == 25);
    CHECK(Int(body["left"]) == 25);
  }
  res = c.Get("/v1/users/user-100/memberships");
  REQUIRE(res->status == 200);
  CHECK(Json(res->body)["memberships"].get_array().value().size() == 1);

  // Manual bucket; a user id with a slash and a space travels percent-encoded.
  res = Post(c, "/v1/buckets/vip/members", R"({"userId":"a/b c"})");
  REQUIRE(res->status == 201);
  res = c.Get("/v1/buckets/vip/members/a%2Fb%20c");
  REQUIRE(res->status == 200);
  CHECK(Str(Json(res->body)["userId"]) == "a/b c");
  CHECK(c.Delete("/v1/buckets/vip/members/a%2Fb%20c")->status == 200);
  RequireError(c.Get("/v1/buckets/vip/members/a%2Fb%20c"), 404, "not_found");

  // Toggle, delete, state, sweep, snapshot, metrics.
  res = c.Patch("/v1/buckets/power", R"({"enabled":false})", "application/json");
  REQUIRE(res->status == 200);
  CHECK_FALSE(Json(res->body)["enabled"].get_bool().value());
  CHECK(c.Delete("/v1/buckets/vip")->status == 200);
  RequireError(c.Get("/v1/buckets/vip"), 404, "not_found");
  res = Post(c, "/v1/sweep", "");
  REQUIRE(res->status == 200);
  CHECK(Int(Json(res->body)["due"]) == 0);
  res = Post(c, "/v1/snapshots", "");
  CHECK(res->status == 201);
  res = c.Get("/v1/state");
  {
    Json body(res->body);
    CHECK(Int(body["transitionSeq"]) == 52);  // 50 + the manual add and remove
    CHECK(Str(body["now"]) == "2026-01-02T00:00:00.001Z");
  }
  res = c.Get("/metrics");
  REQUIRE(res->status == 200);
  CHECK(res->body.find("bucketd_events_total{outcome=\"accepted\"} 50") != std::string::npos);
  CHECK(res->body.find("bucketd_http_requests_total{route=\"events\",status=\"200\"}") !=
        std::string::npos);
  CHECK(res->body.find("bucketd_sweep_duration_seconds_bucket") != std::string::npos);
  // One 2 MiB block of users and one of slots.
  CHECK(res->body.find("bucketd_state_pool_bytes 4194304\n") != std::string::npos);
  // The 50 events sit in the log's memtable: the log's memory is more than nothing.
  const size_t log_memory = res->body.find("\nbucketd_log_memory_bytes ");
  REQUIRE(log_memory != std::string::npos);
  CHECK(std::stoull(res->body.substr(log_memory + 26)) > 0);
  res = c.Delete("/v1/contacts/user-101");
  CHECK(res->status == 200);
  res = Post(c, "/v1/events", R"({"userId":"user-101","event":"used"})");
  RequireError(res, 409, "failed_precondition");

  CHECK(server.Stop() == 0);
}

TEST_CASE("server: bad requests are refused and change nothing", "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  REQUIRE(Post(c, "/v1/buckets", kPowerUsers)->status == 201);
  const std::string state_before = c.Get("/v1/state")->body;

  RequireError(Post(c, "/v1/events", R"({"userId":"u1","event":)"), 400, "invalid_argument");
  RequireError(Post(c, "/v1/events", R"({"userId":"u1","event":"used","colour":1})"), 400,
               "invalid_argument", "colour");
  RequireError(Post(c, "/v1/events", R"({"userId":"","event":"used"})"), 400, "invalid_argument",
               "userId");
  RequireError(Post(c, "/v1/events", R"({"userId":"u","event":"bucket:x"})"), 400,
               "invalid_argument", "event");
  RequireError(Post(c, "/v1/events", R"({"userId":"u","event":"e","occurredAt":"yesterday"})"), 400,
               "invalid_argument", "occurredAt");
  RequireError(Post(c, "/v1/buckets", R"({"id":"x","criteria":{"type":"nope"}})"), 400,
               "invalid_argument");
  RequireError(Post(c, "/v1/buckets", "not json"), 400, "invalid_argument", "body");
  RequireError(c.Put("/v1/buckets/x", R"({"id":"x",)", "application/json"), 400, "invalid_argument",
               "body");
  // A repeated key has no single meaning: refused in events as in definitions.
  RequireError(Post(c, "/v1/events", R"({"userId":"u1","userId":"u2","event":"used"})"), 400,
               "invalid_argument", "userId");
  RequireError(
      Post(c, "/v1/events", R"({"userId":"u1","event":"used","contactProperties":{"a":1,"a":2}})"),
      400, "invalid_argument", "contactProperties.a");
  // An event's own properties: scalars only, no repeats (SPEC §3b).
  RequireError(
      Post(c, "/v1/events", R"({"userId":"u1","event":"used","properties":{"cart":{"n":1}}})"), 400,
      "invalid_argument", "properties.cart");
  RequireError(
      Post(c, "/v1/events", R"({"userId":"u1","event":"used","properties":{"a":1,"a":2}})"), 400,
      "invalid_argument", "properties.a");
  RequireError(Post(c, "/v1/events", R"({"userId":"u1","event":"used","properties":[1]})"), 400,
               "invalid_argument", "properties");
  {
    auto res = Post(c, "/v1/events", R"([{"userId":"u1","event":"used","event":"open"}])");
    REQUIRE(res);
    REQUIRE(res->status == 200);
    Json batch(res->body);
    CHECK(Int(batch["accepted"]) == 0);
    CHECK(Str(batch["rejected"].at(0)["error"]["field"]) == "event");
  }
  RequireError(c.Get("/v1/buckets/nope"), 404, "not_found");
  RequireError(c.Get("/v1/buckets/nope/members"), 404, "not_found");
  RequireError(c.Get("/v1/buckets/power/members?limit=1001"), 400, "invalid_argument", "limit");
  RequireError(c.Get("/v1/transitions?limit=10001"), 400, "invalid_argument", "limit");
  RequireError(c.Get("/v1/transitions?wait=31"), 400, "invalid_argument", "wait");
  RequireError(c.Patch("/v1/buckets/power", R"({"enabled":"yes"})", "application/json"), 400,
               "invalid_argument", "enabled");
  RequireError(Post(c, "/v1/clock", R"({"now":0})"), 409, "failed_precondition");
  RequireError(c.Get("/v1/no/such/route"), 404, "not_found");

  std::string huge(17u << 20, ' ');
  RequireError(Post(c, "/v1/events", huge), 413, "payload_too_large");
  std::string too_many = "[";
  for (int i = 0; i <= 100000; ++i) too_many += i == 0 ? "{}" : ",{}";
  RequireError(Post(c, "/v1/events", too_many + "]"), 413, "payload_too_large");

  CHECK(c.Get("/v1/state")->body == state_before);

  // NDJSON: a malformed line is refused on its own, with its index; the rest apply.
  auto res = c.Post("/v1/events",
                    "{\"userId\":\"u1\",\"event\":\"used\"}\n{oops\n"
                    "{\"userId\":\"u1\",\"event\":\"used\"}\n{\"userId\":\"u2\"}\n",
                    "application/x-ndjson");
  REQUIRE(res->status == 200);
  Json body(res->body);
  CHECK(Int(body["accepted"]) == 2);
  CHECK(Int(body["transitions"]) == 1);
  auto rejected = body["rejected"].get_array().value();
  REQUIRE(rejected.size() == 2);
  CHECK(Int(rejected.at(0).value()["index"]) == 1);
  CHECK(Int(rejected.at(1).value()["index"]) == 3);
  CHECK(Str(rejected.at(1).value()["error"]["field"]) == "event");

  // Idempotency keys make duplicates.
  res = Post(c, "/v1/events",
             R"([{"userId":"u3","event":"x","idempotencyKey":"k"},)"
             R"({"userId":"u3","event":"x","idempotencyKey":"k"}])");
  CHECK(Int(Json(res->body)["duplicates"]) == 1);
  CHECK(server.Stop() == 0);
}

TEST_CASE("server: bearer token guards /v1 only", "[server]") {
  TempDir dir;
  Server server(dir.path, {"--auth-token", "s3cret"});
  httplib::Client c = server.Client();
  RequireError(c.Get("/v1/state"), 401, "unauthorized");
  RequireError(c.Get("/v1/state", {{"Authorization", "Bearer wrong"}}), 401, "unauthorized");
  RequireError(c.Get("/v1/state", {{"Authorization", "Bearer s3cre"}}), 401, "unauthorized");
  CHECK(c.Get("/v1/state", {{"Authorization", "Bearer s3cret"}})->status == 200);
  CHECK(c.Get("/healthz")->status == 200);
  CHECK(c.Get("/metrics")->status == 200);
}

TEST_CASE("server: a restart keeps state, members and the transition stream", "[server]") {
  TempDir dir;
  std::string state;
  std::string members;
  {
    Server server(dir.path);
    httplib::Client c = server.Client();
    REQUIRE(Post(c, "/v1/buckets", kPowerUsers)->status == 201);
    REQUIRE(Post(c, "/v1/events", Events(3, "used"))->status == 200);
    state = c.Get("/v1/state")->body;
    members = c.Get("/v1/buckets/power/members")->body;
    REQUIRE(server.Stop() == 0);
  }
  Server server(dir.path, {"--snapshot-on-exit"});
  httplib::Client c = server.Client();
  CHECK(c.Get("/v1/state")->body == state);
  CHECK(c.Get("/v1/buckets/power/members")->body == members);
  REQUIRE(Post(c, "/v1/events", Events(1, "used", 200))->status == 200);
  auto res = c.Get("/v1/transitions?after=3");
  Json body(res->body);
  CHECK(Int(body["transitions"].at(0).value()["seq"]) == 4);
  CHECK(server.Stop() == 0);
}

TEST_CASE("server: a long poll returns as soon as a transition arrives", "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  REQUIRE(Post(c, "/v1/buckets", kPowerUsers)->status == 201);

  auto started = std::chrono::steady_clock::now();
  auto poll = std::async(std::launch::async, [&server] {
    httplib::Client poller = server.Client();
    auto res = poller.Get("/v1/transitions?after=0&wait=20");
    return res ? res->body : std::string();
  });
  std::this_thread::sleep_for(300ms);
  REQUIRE(Post(c, "/v1/events", Events(1, "used"))->status == 200);
  std::string body = poll.get();
  auto elapsed = std::chrono::steady_clock::now() - started;
  CHECK(elapsed < 5s);
  Json json(body);
  CHECK(json["transitions"].get_array().value().size() == 1);
  CHECK(Int(json["next"]) == 1);

  // Nothing new: an empty page after the wait, next = after.
  auto res = c.Get("/v1/transitions?after=1&wait=500ms");
  Json empty(res->body);
  CHECK(empty["transitions"].get_array().value().size() == 0);
  CHECK(Int(empty["next"]) == 1);
  CHECK(server.Stop() == 0);
}

TEST_CASE("server: wait=0s, 0ms and 0m0s answer at once like wait=0; malformed zeros are refused",
          "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  // Nothing to return: a wait that were taken as nonzero would hold the request open.
  for (const char* wait : {"0", "0s", "0ms", "00s", "0m0s"}) {
    INFO(wait);
    const auto started = std::chrono::steady_clock::now();
    auto res = c.Get((std::string("/v1/transitions?after=0&wait=") + wait).c_str());
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(std::chrono::steady_clock::now() - started < 400ms);
    CHECK(Json(res->body)["transitions"].get_array().value().size() == 0);
  }
  for (const char* wait : {"0x", "s", "0.0s", "-0s"}) {
    INFO(wait);
    RequireError(c.Get((std::string("/v1/transitions?wait=") + wait).c_str()), 400,
                 "invalid_argument", "wait");
  }
  CHECK(server.Stop() == 0);
}

TEST_CASE("server: example buckets load at start-up; wall clock refuses /v1/clock", "[server]") {
  TempDir dir;
#ifdef BUCKETD_EXAMPLES_DIR
  Server server(dir.path, {"--clock", "wall", "--buckets", BUCKETD_EXAMPLES_DIR});
#else
  FAIL("BUCKETD_EXAMPLES_DIR is not defined");
  Server server(dir.path, {"--clock", "wall"});
#endif
  httplib::Client c = server.Client();
  auto res = c.Get("/v1/buckets");
  REQUIRE(res->status == 200);
  CHECK(Json(res->body)["buckets"].get_array().value().size() == 3);
  res = Post(c, "/v1/clock", R"({"now":)" + std::to_string(kStartMs + kDayMs) + "}");
  RequireError(res, 409, "failed_precondition");
  CHECK(server.Stop() == 0);
}

TEST_CASE("server: --buckets diffs definitions at start-up; --prune-buckets deletes the rest",
          "[server]") {
  TempDir dir;
  TempDir defs;
  auto write = [&](const std::string& name, const std::string& json) {
    std::ofstream(defs.path / name) << json;
  };
  write("a.json", R"({"id":"a","criteria":{"type":"event","eventName":"x","check":"exists"}})");
  write("b.json", R"({"id":"b","criteria":{"type":"event","eventName":"y","check":"exists"}})");
  int64_t log_seq = 0;
  {
    Server server(dir.path, {"--buckets", defs.path.string()});
    httplib::Client c = server.Client();
    REQUIRE(Post(c, "/v1/events", R"({"userId":"u","event":"x"})")->status == 200);
    log_seq = Int(Json(c.Get("/v1/state")->body)["logSeq"]);
    CHECK(server.Stop() == 0);
  }
  {
    // Unchanged files: nothing is logged at start-up.
    Server server(dir.path, {"--buckets", defs.path.string()});
    httplib::Client c = server.Client();
    CHECK(Int(Json(c.Get("/v1/state")->body)["logSeq"]) == log_seq);
    CHECK(server.Stop() == 0);
  }
  // A changed criteria re-evaluates (u leaves a: left is emitted); b is gone from the files.
  write("a.json", R"({"id":"a","criteria":{"type":"event","eventName":"z","check":"exists"}})");
  fs::remove(defs.path / "b.json");
  {
    Server server(dir.path, {"--buckets", defs.path.string()});
    httplib::Client c = server.Client();
    CHECK(Int(Json(c.Get("/v1/buckets/a/count")->body)["count"]) == 0);
    CHECK(c.Get("/v1/buckets/b")->status == 200);  // stays without --prune-buckets
    Json stream(c.Get("/v1/transitions?after=0")->body);
    auto transitions = stream["transitions"].get_array().value();
    REQUIRE(transitions.size() == 2);
    CHECK(Str(transitions.at(1).value()["name"]) == "bucket:left:a");
    CHECK(server.Stop() == 0);
  }
  {
    Server server(dir.path, {"--buckets", defs.path.string(), "--prune-buckets"});
    httplib::Client c = server.Client();
    CHECK(c.Get("/v1/buckets/b")->status == 404);
    CHECK(c.Get("/v1/buckets/a")->status == 200);
    CHECK(server.Stop() == 0);
  }
}

TEST_CASE("server: a path id is one raw segment: a bare '/' is no route, an encoded one is kept",
          "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  REQUIRE(c.Put("/v1/buckets/vip", R"({"kind":"manual"})", "application/json")->status == 201);
  REQUIRE(Post(c, "/v1/buckets/vip/members", R"({"userId":"alice"})")->status == 201);
  REQUIRE(Post(c, "/v1/events", R"({"userId":"alice","event":"e"})")->status == 200);
  REQUIRE(Post(c, "/v1/events", R"({"userId":"a/b","event":"e"})")->status == 200);
  const std::string state_before = c.Get("/v1/state")->body;

  auto no_route = [](const httplib::Result& res) {
    RequireError(res, 404, "not_found");
    CHECK(Str(Json(res->body)["error"]["message"]) == "no such route");
  };
  // Each of these used to act on "alice", the part before the '/'.
  no_route(c.Delete("/v1/contacts/alice/x"));
  no_route(c.Get("/v1/buckets/vip/members/alice/x"));
  no_route(c.Delete("/v1/buckets/vip/members/alice/x"));
  no_route(c.Get("/v1/users/alice/x/memberships"));
  no_route(c.Get("/v1/buckets/vip/x/count"));
  // An empty segment is never an id.
  no_route(c.Delete("/v1/contacts/"));
  no_route(c.Delete("/v1/contacts//"));
  no_route(c.Get("/v1/buckets//count"));
  no_route(c.Get("/v1/buckets/vip/members/"));
  no_route(c.Get("/v1/users///memberships"));
  no_route(c.Get("/v1/buckets/vip/"));
  CHECK(c.Get("/v1/state")->body == state_before);
  CHECK(c.Get("/v1/buckets/vip/members/alice")->status == 200);
  CHECK(Str(Json(c.Get("/v1/users/alice/memberships")->body)["userId"]) == "alice");

  // Percent-encoded, '/' is part of the id, and so are literal segments' encodings.
  auto res = c.Get("/v1/users/a%2Fb/memberships");
  REQUIRE(res->status == 200);
  CHECK(Str(Json(res->body)["userId"]) == "a/b");
  CHECK(c.Get("/v1/%62uckets/vip/count")->status == 200);
  res = c.Delete("/v1/contacts/a%2Fb");
  REQUIRE(res->status == 200);
  CHECK(Str(Json(res->body)["userId"]) == "a/b");
  RequireError(Post(c, "/v1/events", R"({"userId":"a/b","event":"e"})"), 409,
               "failed_precondition");
  CHECK(Post(c, "/v1/events", R"({"userId":"alice","event":"e"})")->status == 200);
  CHECK(server.Stop() == 0);
}

TEST_CASE("server: error bodies are valid UTF-8 JSON whatever bytes the path held", "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  const std::string replacement = "\xef\xbf\xbd";  // U+FFFD
  for (const char* path : {"/v1/buckets/%FF/count", "/v1/buckets/a%C3/members/u",
                           "/v1/buckets/%ED%A0%80", "/v1/buckets/%C0%AF/metrics"}) {
    INFO(path);
    auto res = c.Get(path);
    RequireError(res, 404, "not_found");  // RequireError parses the body, UTF-8 checked
    CHECK(Str(Json(res->body)["error"]["message"]).find(replacement) != std::string::npos);
  }
  CHECK(server.Stop() == 0);
}

TEST_CASE("server: a repeated idempotencyKey is a duplicate even on an event it would refuse",
          "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  auto duplicate = [](const httplib::Result& res) {
    REQUIRE(res);
    INFO(res->body);
    REQUIRE(res->status == 200);
    Json body(res->body);
    CHECK(Int(body["accepted"]) == 0);
    CHECK(Int(body["duplicates"]) == 1);
    CHECK(body["rejected"].get_array().value().size() == 0);
  };
  REQUIRE(Post(c, "/v1/events", R"({"userId":"u1","event":"e","idempotencyKey":"k1"})")->status ==
          200);
  const std::string state_before = c.Get("/v1/state")->body;

  // A single event: refused by the server's own parsing, before or after the key.
  duplicate(Post(c, "/v1/events", R"({"userId":"","event":"e","idempotencyKey":"k1"})"));
  duplicate(Post(c, "/v1/events", R"({"userId":"u1","event":"bucket:x","idempotencyKey":"k1"})"));
  duplicate(Post(c, "/v1/events", R"({"idempotencyKey":"k1","userId":"u1","colour":1})"));
  duplicate(Post(c, "/v1/events", R"({"userId":7,"event":"e","idempotencyKey":"k1"})"));
  duplicate(Post(c, "/v1/events", R"({"event":"e","occurredAt":"soon","idempotencyKey":"k1"})"));
  CHECK(c.Get("/v1/state")->body == state_before);

  // A key not seen before leaves the refusal as it was, and is not remembered.
  RequireError(Post(c, "/v1/events", R"({"userId":"","event":"e","idempotencyKey":"k2"})"), 400,
               "invalid_argument", "userId");
  RequireError(
      Post(c, "/v1/events", R"({"userId":"u1","event":"e","colour":1,"idempotencyKey":""})"), 400,
      "invalid_argument", "colour");
  CHECK(c.Get("/v1/state")->body == state_before);
  auto res = Post(c, "/v1/events", R"({"userId":"u1","event":"e","idempotencyKey":"k2"})");
  CHECK(Int(Json(res->body)["accepted"]) == 1);

  // A batch, keys seen earlier in the same batch included; NDJSON likewise.
  res = Post(c, "/v1/events",
             R"([{"userId":"u2","event":"e","idempotencyKey":"k3"},)"
             R"({"userId":"u2","event":"bucket:x","idempotencyKey":"k3"},)"
             R"({"event":"e","idempotencyKey":"k1"},)"
             R"({"userId":"","event":"e","idempotencyKey":"k4"},)"
             R"({"userId":"u2","event":"e","idempotencyKey":"k4"},)"
             R"({"userId":"u2","event":7,"idempotencyKey":"k2"}])");
  REQUIRE(res->status == 200);
  {
    Json body(res->body);
    CHECK(Int(body["accepted"]) == 2);
    CHECK(Int(body["duplicates"]) == 3);
    auto rejected = body["rejected"].get_array().value();
    REQUIRE(rejected.size() == 1);
    CHECK(Int(rejected.at(0).value()["index"]) == 3);
    CHECK(Str(rejected.at(0).value()["error"]["field"]) == "userId");
    CHECK(Str(rejected.at(0).value()["error"]["message"]) == "must be 1-256 bytes");
  }
  res = c.Post("/v1/events",
               "{\"userId\":\"u3\",\"idempotencyKey\":\"k3\"}\n{oops\n"
               "{\"userId\":\"u3\",\"event\":\"e\",\"idempotencyKey\":\"k5\",\"x\":1}\n",
               "application/x-ndjson");
  REQUIRE(res->status == 200);
  {
    Json body(res->body);
    CHECK(Int(body["accepted"]) == 0);
    CHECK(Int(body["duplicates"]) == 1);
    auto rejected = body["rejected"].get_array().value();
    REQUIRE(rejected.size() == 2);
    CHECK(Int(rejected.at(0).value()["index"]) == 1);
    CHECK(Int(rejected.at(1).value()["index"]) == 2);
    CHECK(Str(rejected.at(1).value()["error"]["field"]) == "x");
  }
  CHECK(server.Stop() == 0);
}

TEST_CASE("server: a user's contact and events; a preview changes nothing", "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  REQUIRE(Post(c, "/v1/buckets", kPowerUsers)->status == 201);
  REQUIRE(Post(c, "/v1/events", Events(25, "used"))->status == 200);
  auto res = Post(c, "/v1/events",
                  R"({"userId":"user-100","event":"signup","email":" A@B.example ",)"
                  R"("contactProperties":{"plan":"pro","seats":3}})");
  REQUIRE(res->status == 200);

  res = c.Get("/v1/users/user-100");
  REQUIRE(res->status == 200);
  {
    Json body(res->body);
    CHECK(Str(body["userId"]) == "user-100");
    CHECK(Str(body["email"]) == "a@b.example");
    CHECK_FALSE(body["deleted"].get_bool().value());
    CHECK(Str(body["properties"]["plan"]) == "pro");
    CHECK(body["properties"]["seats"].get_double().value() == 3);
    CHECK(Int(body["events"]["used"]["count"]) == 2);
    CHECK(Str(body["events"]["used"]["firstAt"]) == "2026-01-01T00:00:00.000Z");
    CHECK(Int(body["events"]["signup"]["count"]) == 1);
  }
  RequireError(c.Get("/v1/users/nobody"), 404, "not_found");

  // A narrower replacement: 10 of the 25 members stay (user-100 .. user-109 used twice more).
  REQUIRE(Post(c, "/v1/events", Events(10, "used"))->status == 200);
  const std::string narrower =
      R"({"id":"power","criteria":{"type":"event","eventName":"used","check":"count",)"
      R"("operator":"gte","value":4,"within":"1d"}})";
  const std::string after_events = c.Get("/v1/state")->body;
  res = Post(c, "/v1/buckets/preview", narrower);
  REQUIRE(res->status == 200);
  {
    Json body(res->body);
    CHECK(Int(body["count"]) == 10);
    CHECK(Int(body["entering"]) == 0);
    CHECK(Int(body["leaving"]) == 15);
    auto sample = body["sample"].get_array().value();
    REQUIRE(sample.size() == 10);
    CHECK(Str(sample.at(0).value()) == "user-100");
    CHECK(Str(sample.at(9).value()) == "user-109");
  }
  CHECK(c.Get("/v1/state")->body == after_events);
  RequireError(Post(c, "/v1/buckets/preview", R"({"id":"p","criteria":{"type":"event"}})"), 400,
               "invalid_argument", "criteria.eventName");
  RequireError(Post(c, "/v1/buckets/preview", "{"), 400, "invalid_argument", "body");
  // Defining it does what the preview said.
  res = c.Put("/v1/buckets/power", narrower, "application/json");
  REQUIRE(res->status == 200);
  CHECK(Int(Json(res->body)["counts"]["active"]) == 10);
  CHECK(Int(Json(res->body)["counts"]["left"]) == 15);
  CHECK(server.Stop() == 0);
}

TEST_CASE("server: explain says why, changes nothing, and its next is what happens", "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  REQUIRE(Post(c, "/v1/buckets", kPowerUsers)->status == 201);
  REQUIRE(Post(c, "/v1/events", Events(1, "used"))->status == 200);  // user-100, twice
  const std::string state = c.Get("/v1/state")->body;
  auto res = c.Get("/v1/buckets/power/explain/user-100");
  REQUIRE(res->status == 200);
  {
    Json body(res->body);
    CHECK(Str(body["bucketId"]) == "power");
    CHECK(Str(body["userId"]) == "user-100");
    CHECK(body["member"].get_bool().value());
    CHECK(body["holds"].get_bool().value());
    CHECK(Str(body["next"]) == "2026-01-02T00:00:00.000Z");
    CHECK(Str(body["nextDueAt"]) == "2026-01-02T00:00:00.000Z");
    CHECK(Int(body["membership"]["entryCount"]) == 1);
    CHECK(Str(body["membership"]["source"]) == "event");
    auto legs = body["legs"].get_array().value();
    REQUIRE(legs.size() == 1);
    simdjson::dom::element leg = legs.at(0).value();
    CHECK(Str(leg["path"].value()) == "criteria");
    CHECK(Str(leg["type"].value()) == "event");
    CHECK(Str(leg["check"].value()) == "count");
    CHECK(Int(leg["value"]["count"].value()) == 2);
    CHECK(Str(leg["heldSince"].value()) == "2026-01-01T00:00:00.000Z");
    CHECK(body["blockers"].get_array().value().size() == 0);
  }
  CHECK(c.Get("/v1/state")->body == state);  // nothing logged, nothing changed
  // The clock then leaves at exactly that instant.
  REQUIRE(Post(c, "/v1/clock", R"({"now":"2026-01-03T00:00:00Z"})")->status == 200);
  res = c.Get("/v1/transitions?after=1");
  REQUIRE(res->status == 200);
  {
    Json body(res->body);
    auto transitions = body["transitions"].get_array().value();
    REQUIRE(transitions.size() == 1);
    CHECK(Str(transitions.at(0)["kind"].value()) == "left");
    CHECK(Str(transitions.at(0)["at"].value()) == "2026-01-02T00:00:00.000Z");
  }
  res = c.Get("/v1/buckets/power/explain/user-100");
  REQUIRE(res->status == 200);
  CHECK_FALSE(Json(res->body)["member"].get_bool().value());
  CHECK(Str(Json(res->body)["membership"]["leftAt"]) == "2026-01-02T00:00:00.000Z");

  RequireError(c.Get("/v1/buckets/nope/explain/user-100"), 404, "not_found");
  RequireError(c.Get("/v1/buckets/power/explain/nobody"), 404, "not_found");
  REQUIRE(c.Delete("/v1/contacts/user-100")->status == 200);
  res = c.Get("/v1/buckets/power/explain/user-100");
  RequireError(res, 404, "not_found");
  CHECK(Str(Json(res->body)["error"]["message"]).find("deleted") != std::string::npos);
  CHECK(server.Stop() == 0);
}

TEST_CASE("server: the bucket ids . and .. are refused", "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  for (const std::string id : {".", ".."}) {
    RequireError(Post(c, "/v1/buckets", R"({"id":")" + id + R"(","kind":"manual"})"), 400,
                 "invalid_argument", "id");
  }
  RequireError(c.Put("/v1/buckets/%2E%2E", R"({"kind":"manual"})", "application/json"), 400,
               "invalid_argument", "id");
  CHECK(Json(c.Get("/v1/buckets")->body)["buckets"].get_array().value().size() == 0);
  CHECK(server.Stop() == 0);
}

TEST_CASE(
    "server: DELETE /v1/contacts/{id}?erase=true leaves no byte of the id or email in "
    "the data dir",
    "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  REQUIRE(Post(c, "/v1/buckets", kPowerUsers)->status == 201);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(Post(c, "/v1/events",
                 R"({"userId":"erin-q","event":"used","email":"erin@example.org",)"
                 R"("idempotencyKey":"erin-q-)" +
                     std::to_string(i) + R"("})")
                ->status == 200);
  }
  REQUIRE(Post(c, "/v1/snapshots", "")->status == 201);
  RequireError(c.Delete("/v1/contacts/erin-q?erase=yes"), 400, "invalid_argument", "erase");

  auto res = c.Delete("/v1/contacts/erin-q?erase=true");
  REQUIRE(res);
  INFO(res->body);
  REQUIRE(res->status == 200);
  Json erased(res->body);
  CHECK(Str(erased["pseudonym"]).starts_with("erased-"));
  CHECK(Int(erased["records"]) == 4);  // three events and the delete
  CHECK(Int(erased["idempotencyKeys"]) == 3);
  CHECK(res->body.find("erin-q") == std::string::npos);
  // Her `entered` in the stream now names the pseudonym.
  const std::string stream = c.Get("/v1/transitions?after=0")->body;
  CHECK(stream.find("erin-q") == std::string::npos);
  CHECK(stream.find("erin@example.org") == std::string::npos);
  CHECK(stream.find(Str(erased["pseudonym"])) != std::string::npos);
  RequireError(c.Delete("/v1/contacts/erin-q?erase=true"), 404, "not_found");
  CHECK(server.Stop() == 0);
  for (const auto& entry : fs::recursive_directory_iterator(dir.path)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    INFO(entry.path());
    CHECK(bytes.find("erin-q") == std::string::npos);
    CHECK(bytes.find("erin@example.org") == std::string::npos);
  }
}

TEST_CASE("server: a full disk answers 507 to inputs, 503 from /healthz, and reads go on",
          "[server]") {
  TempDir dir;
  const fs::path small = dir.path / "small";
  fs::create_directories(small);
  if (::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=24m") != 0) {
    WARN("cannot mount a small tmpfs here (not root?): the full-disk test did not run");
    return;
  }
  struct Unmount {
    fs::path path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{small};
  Server server(small / "data");
  auto c = server.Client();
  REQUIRE(Post(c, "/v1/buckets", kPowerUsers)->status == 201);
  const std::string padding(4000, 'p');
  const auto batch = [&](int round) {
    std::string body = "[";
    for (int i = 0; i < 50; ++i) {
      if (i > 0) body += ",";
      body += R"({"userId":"u)" + std::to_string(round * 50 + i) +
              R"(","event":"used","contactProperties":{"pad":")" + padding + R"("}})";
    }
    return Post(c, "/v1/events", body + "]");
  };
  int round = 0;
  auto res = batch(round);
  for (; res && res->status == 200 && round < 10000; res = batch(++round)) {
  }
  RequireError(res, 507, "insufficient_storage");
  // Every later input gets the same answer; the server stays up and reads work.
  RequireError(Post(c, "/v1/events", R"({"userId":"late","event":"used"})"), 507,
               "insufficient_storage");
  auto health = c.Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 503);
  Json body(health->body);
  CHECK(Str(body["status"]) == "failed");
  CHECK(Str(body["error"]["code"]) == "no_space");
  // Not ready either: a load balancer sends nothing more to a server that refuses inputs.
  auto ready = c.Get("/readyz");
  REQUIRE(ready);
  CHECK(ready->status == 503);
  CHECK(Str(Json(ready->body)["status"]) == "failed");
  auto count = c.Get("/v1/buckets/power/count");
  REQUIRE(count);
  CHECK(count->status == 200);
}

TEST_CASE("server: events with their own properties feed where filters and aggregates",
          "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  REQUIRE(Post(c, "/v1/buckets",
               R"({"id":"pro-spend","criteria":{"type":"event","eventName":"purchase",
                 "check":"sum","property":"amount","operator":"gte","value":100,
                 "where":[{"property":"plan","operator":"eq","value":"pro"}]}})")
              ->status == 201);
  // NDJSON: two pro purchases reach 100, the basic one does not count.
  auto res = c.Post("/v1/events",
                    "{\"userId\":\"u1\",\"event\":\"purchase\",\"properties\":{\"plan\":\"pro\","
                    "\"amount\":60}}\n"
                    "{\"userId\":\"u1\",\"event\":\"purchase\",\"properties\":{\"plan\":\"basic\","
                    "\"amount\":500}}\n"
                    "{\"userId\":\"u1\",\"event\":\"purchase\",\"properties\":{\"plan\":\"pro\","
                    "\"amount\":40}}\n",
                    "application/x-ndjson");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  res = c.Get("/v1/buckets/pro-spend/count");
  REQUIRE(res->status == 200);
  CHECK(Int(Json(res->body)["count"]) == 1);
  // The definition comes back in its canonical form, the filter included.
  res = c.Get("/v1/buckets/pro-spend");
  REQUIRE(res->status == 200);
  CHECK(res->body.find(R"("where":[{"property":"plan","operator":"eq","value":"pro"}])") !=
        std::string::npos);
}
