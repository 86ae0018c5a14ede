// GET /v1/transitions as a consumer uses it against the real `bucketd`: the stream id, the 409
// of a cursor from another stream, filters and their long-polls; and the past members page.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <string>
#include <thread>

#include <httplib.h>
#include <simdjson.h>
#include <catch2/catch.hpp>

#include "tests/sidecar_test_support.h"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Server = bucketd::testing::Sidecar;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "bucketd-stream-test-XXXXXX").string();
    path = mkdtemp(templ.data());
  }
  ~TempDir() { fs::remove_all(path); }
};

struct Json {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  explicit Json(const std::string& text) { REQUIRE(parser.parse(text).get(root) == 0); }
  simdjson::dom::element operator[](std::string_view key) { return root[key].value(); }
};

int64_t Int(simdjson::dom::element e) { return e.get_int64().value(); }
std::string Str(simdjson::dom::element e) { return std::string(e.get_string().value()); }

httplib::Result Post(httplib::Client& c, const std::string& path, const std::string& body) {
  return c.Post(path.c_str(), body, "application/json");
}

void RequireError(const httplib::Result& res, int http_status, std::string_view field) {
  REQUIRE(res);
  INFO(res->body);
  REQUIRE(res->status == http_status);
  Json body(res->body);
  CHECK(Str(body["error"]["field"]) == field);
}

// The names of a page's transitions, then "next=<n>".
std::vector<std::string> Names(const std::string& body) {
  Json json(body);
  std::vector<std::string> out;
  simdjson::dom::array transitions = json["transitions"].get_array().value();
  for (size_t i = 0; i < transitions.size(); ++i) {
    simdjson::dom::element t = transitions.at(i).value();
    out.push_back(Str(t["name"].value()) + ":" + Str(t["userId"].value()));
  }
  out.push_back("next=" + std::to_string(Int(json["next"])));
  return out;
}

const char* kVip = R"({"id":"vip","name":"VIP","kind":"manual"})";
const char* kStaff = R"({"id":"staff","name":"Staff","kind":"manual"})";

}  // namespace

TEST_CASE("server: transitions and state carry the stream id, the same after a restart",
          "[server]") {
  TempDir dir;
  std::string id;
  {
    Server server(dir.path);
    httplib::Client c = server.Client();
    REQUIRE(Post(c, "/v1/buckets", kVip)->status == 201);
    REQUIRE(Post(c, "/v1/buckets/vip/members", R"({"userId":"alice"})")->status == 201);
    Json page(c.Get("/v1/transitions?after=0")->body);
    id = Str(page["streamId"]);
    CHECK(id.size() == 36);
    CHECK(Int(page["next"]) == 1);
    CHECK(Int(page["lastSeq"]) == 1);
    Json state(c.Get("/v1/state")->body);
    CHECK(Str(state["streamId"]) == id);
    REQUIRE(server.Stop() == 0);
  }
  Server server(dir.path);
  httplib::Client c = server.Client();
  CHECK(Str(Json(c.Get("/v1/state")->body)["streamId"]) == id);
  CHECK(Str(Json(c.Get("/v1/transitions?after=1")->body)["streamId"]) == id);
  CHECK(server.Stop() == 0);
}

TEST_CASE(
    "server: a cursor beyond the stream's end is a 409 with the last seq and the stream id, "
    "also for a long-poll",
    "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  REQUIRE(Post(c, "/v1/buckets", kVip)->status == 201);
  REQUIRE(Post(c, "/v1/buckets/vip/members", R"({"userId":"alice"})")->status == 201);
  const std::string id = Str(Json(c.Get("/v1/state")->body)["streamId"]);
  for (const char* path : {"/v1/transitions?after=7", "/v1/transitions?after=2&wait=30"}) {
    auto res = c.Get(path);
    RequireError(res, 409, "after");
    Json body(res->body);
    CHECK(Str(body["error"]["code"]) == "failed_precondition");
    CHECK(Int(body["error"]["lastSeq"]) == 1);
    CHECK(Str(body["error"]["streamId"]) == id);
  }
  CHECK(c.Get("/v1/transitions?after=1")->status == 200);  // the end itself is a cursor
  CHECK(server.Stop() == 0);
}

TEST_CASE("server: bucket and kind filter the stream; bad values are 400 naming the field",
          "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  REQUIRE(Post(c, "/v1/buckets", kVip)->status == 201);
  REQUIRE(Post(c, "/v1/buckets", kStaff)->status == 201);
  REQUIRE(Post(c, "/v1/buckets/vip/members", R"({"userId":"alice"})")->status == 201);  // 1
  REQUIRE(Post(c, "/v1/buckets/staff/members", R"({"userId":"bob"})")->status == 201);  // 2
  REQUIRE(c.Delete("/v1/buckets/vip/members/alice")->status == 200);                    // 3
  REQUIRE(Post(c, "/v1/buckets/vip/members", R"({"userId":"carol"})")->status == 201);  // 4
  using V = std::vector<std::string>;
  CHECK(
      Names(c.Get("/v1/transitions?bucket=vip")->body) ==
      V{"bucket:entered:vip:alice", "bucket:left:vip:alice", "bucket:entered:vip:carol", "next=4"});
  CHECK(Names(c.Get("/v1/transitions?kind=left")->body) == V{"bucket:left:vip:alice", "next=4"});
  for (const char* both : {"/v1/transitions?kind=left,entered&bucket=staff",
                           "/v1/transitions?kind=left&kind=entered&bucket=staff"}) {
    CHECK(Names(c.Get(both)->body) == V{"bucket:entered:staff:bob", "next=4"});
  }
  CHECK(Names(c.Get("/v1/transitions?bucket=vip&limit=1&after=1")->body) ==
        V{"bucket:left:vip:alice", "next=3"});
  CHECK(Names(c.Get("/v1/transitions?bucket=nobody")->body) == V{"next=4"});

  RequireError(c.Get("/v1/transitions?kind=joined"), 400, "kind");
  RequireError(c.Get("/v1/transitions?kind=left,"), 400, "kind");
  RequireError(c.Get("/v1/transitions?bucket=a%20b"), 400, "bucket");
  RequireError(c.Get("/v1/transitions?bucket=vip&bucket=staff"), 400, "bucket");
  CHECK(server.Stop() == 0);
}

TEST_CASE("server: a filtered long-poll wakes only for a matching transition", "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  REQUIRE(Post(c, "/v1/buckets", kVip)->status == 201);
  REQUIRE(Post(c, "/v1/buckets", kStaff)->status == 201);

  auto poll = std::async(std::launch::async, [&server] {
    httplib::Client poller = server.Client();
    auto res = poller.Get("/v1/transitions?after=0&kind=left&wait=30");
    return res ? res->body : std::string();
  });
  // Neither of these matches: the poll keeps waiting past them.
  REQUIRE(Post(c, "/v1/buckets/vip/members", R"({"userId":"alice"})")->status == 201);
  REQUIRE(Post(c, "/v1/buckets/staff/members", R"({"userId":"bob"})")->status == 201);
  std::this_thread::sleep_for(200ms);
  REQUIRE(c.Delete("/v1/buckets/staff/members/bob")->status == 200);
  CHECK(Names(poll.get()) == std::vector<std::string>{"bucket:left:staff:bob", "next=3"});

  // Nothing matching arrives: the poll answers at its deadline with the cursor moved on.
  REQUIRE(Post(c, "/v1/buckets/vip/members", R"({"userId":"carol"})")->status == 201);
  CHECK(Names(c.Get("/v1/transitions?after=3&bucket=staff&wait=300ms")->body) ==
        std::vector<std::string>{"next=4"});
  CHECK(server.Stop() == 0);
}

TEST_CASE("server: members?status=left pages past members with when they left", "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  REQUIRE(Post(c, "/v1/buckets", kVip)->status == 201);
  for (const char* user : {"dave", "alice", "carol", "bob"}) {
    REQUIRE(
        Post(c, "/v1/buckets/vip/members", std::string(R"({"userId":")") + user + "\"}")->status ==
        201);
  }
  REQUIRE(Post(c, "/v1/clock", R"({"now":"2026-01-01T01:00:00Z"})")->status == 200);
  for (const char* user : {"dave", "alice", "bob"}) {
    REQUIRE(c.Delete((std::string("/v1/buckets/vip/members/") + user).c_str())->status == 200);
  }
  Json page(c.Get("/v1/buckets/vip/members?status=left&limit=2")->body);
  auto members = page["members"].get_array().value();
  REQUIRE(members.size() == 2);
  CHECK(Str(members.at(0).value()["userId"]) == "alice");
  CHECK(Str(members.at(0).value()["enteredAt"]) == "2026-01-01T00:00:00.000Z");
  CHECK(Str(members.at(0).value()["leftAt"]) == "2026-01-01T01:00:00.000Z");
  CHECK(Str(members.at(0).value()["reason"]) == "manual");
  CHECK(Int(members.at(0).value()["entryCount"]) == 1);
  CHECK(Str(members.at(1).value()["userId"]) == "bob");
  CHECK(Str(page["cursor"]) == "bob");
  Json rest(c.Get("/v1/buckets/vip/members?status=left&limit=2&cursor=bob")->body);
  REQUIRE(rest["members"].get_array().value().size() == 1);
  CHECK(Str(rest["members"].at(0).value()["userId"]) == "dave");
  CHECK(rest["cursor"].is_null());
  // status=active is today's page.
  CHECK(c.Get("/v1/buckets/vip/members?status=active")->body ==
        c.Get("/v1/buckets/vip/members")->body);
  RequireError(c.Get("/v1/buckets/vip/members?status=gone"), 400, "status");
  CHECK(c.Get("/v1/buckets/nope/members?status=left")->status == 404);
  CHECK(server.Stop() == 0);
}

TEST_CASE("server: a bucket's history by step, with RFC 3339 or ms bounds; bad bounds are 400",
          "[server]") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  REQUIRE(Post(c, "/v1/buckets", kVip)->status == 201);
  REQUIRE(Post(c, "/v1/buckets/vip/members", R"({"userId":"alice"})")->status == 201);
  REQUIRE(Post(c, "/v1/clock", R"({"now":"2026-01-01T01:00:00Z"})")->status == 200);
  REQUIRE(Post(c, "/v1/buckets/vip/members", R"({"userId":"bob"})")->status == 201);
  REQUIRE(Post(c, "/v1/clock", R"({"now":"2026-01-01T02:30:00Z"})")->status == 200);
  REQUIRE(c.Delete("/v1/buckets/vip/members/alice")->status == 200);
  // `to` defaults to now (02:30): three steps, the last one half an hour.
  const std::string expected =
      R"({"bucketId":"vip","from":"2026-01-01T00:00:00.000Z","to":"2026-01-01T02:30:00.000Z",)"
      R"("step":3600000,"steps":[)"
      R"({"start":"2026-01-01T00:00:00.000Z","end":"2026-01-01T01:00:00.000Z","size":2,"entered":1,"left":0},)"
      R"({"start":"2026-01-01T01:00:00.000Z","end":"2026-01-01T02:00:00.000Z","size":2,"entered":0,"left":0},)"
      R"({"start":"2026-01-01T02:00:00.000Z","end":"2026-01-01T02:30:00.000Z","size":1,"entered":0,"left":1}]})";
  CHECK(c.Get("/v1/buckets/vip/history?from=2026-01-01T00:00:00Z&step=1h")->body == expected);
  CHECK(c.Get("/v1/buckets/vip/history?from=1767225600000&to=1767234600000&step=3600000")->body ==
        expected);

  RequireError(c.Get("/v1/buckets/vip/history?step=1h"), 400, "from");
  RequireError(c.Get("/v1/buckets/vip/history?from=yesterday&step=1h"), 400, "from");
  RequireError(c.Get("/v1/buckets/vip/history?from=1767225600000"), 400, "step");
  RequireError(c.Get("/v1/buckets/vip/history?from=1767225600000&step=0"), 400, "step");
  RequireError(c.Get("/v1/buckets/vip/history?from=1767225600000&step=1ms"), 400, "step");
  RequireError(c.Get("/v1/buckets/vip/history?from=1767225600000&to=2026-01-02T00:00:00Z&step=1h"),
               400, "to");
  CHECK(c.Get("/v1/buckets/nope/history?from=1767225600000&step=1h")->status == 404);
  CHECK(server.Stop() == 0);
}
