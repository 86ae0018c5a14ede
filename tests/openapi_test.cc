// docs/openapi.json is the API's contract: these tests fail when the server has a route the
// document does not describe, or the document an operation no route serves, and when the
// binary's GET /v1/openapi.json is not the repo's file. The responses themselves are checked
// against the document's schemas by tests/openapi_responses_test.py, on a real server.
#include <cctype>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <sstream>
#include <string>

#include <simdjson.h>
#include <catch2/catch.hpp>

#include "engine_thread.h"
#include "http_api.h"
#include "openapi_document.h"
#include "prometheus.h"
#include "test_support.h"

namespace bucketd::server {
namespace {

using testing::ManualOptions;
using testing::OpenOrFail;
using testing::TempDir;

constexpr const char* kAuthority = "127.0.0.1:7411";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// "/v1/buckets/{bucketId}/members/{userId}" -> "/v1/buckets/{}/members/{}": the router's
// templates name no parameters.
std::string RouterTemplate(std::string_view openapi_path) {
  std::string out;
  bool in_name = false;
  for (char c : openapi_path) {
    if (c == '{') {
      out += "{}";
      in_name = true;
    } else if (c == '}') {
      in_name = false;
    } else if (!in_name) {
      out += c;
    }
  }
  return out;
}

// "METHOD template" for every operation of the document's `paths`. An HTTP method the
// router cannot serve (HEAD, OPTIONS, TRACE) is listed as it is, so it never matches.
std::set<std::string> DocumentedOperations(std::string_view document) {
  static const std::set<std::string> kMethods = {"get",     "put",  "post",  "delete",
                                                 "options", "head", "patch", "trace"};
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE(parser.parse(document.data(), document.size()).get(root) == simdjson::SUCCESS);
  simdjson::dom::object paths;
  REQUIRE(root["paths"].get(paths) == simdjson::SUCCESS);
  std::set<std::string> out;
  for (auto [path, item] : paths) {
    simdjson::dom::object operations;
    REQUIRE(item.get(operations) == simdjson::SUCCESS);
    for (auto [key, operation] : operations) {
      std::string method(key);
      if (!kMethods.contains(method)) continue;  // "parameters", "summary", ...
      for (char& c : method) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      out.insert(method + " " + RouterTemplate(path));
    }
  }
  return out;
}

std::string Join(const std::set<std::string>& items) {
  std::ostringstream out;
  for (const std::string& item : items) out << "\n  " << item;
  return out.str();
}

// The API as bucketd runs it, on a manual-clock engine in a temp dir.
class Api {
 public:
  explicit Api(std::string auth_token = "") {
    engine_thread_ =
        std::make_unique<EngineThread>(OpenOrFail(ManualOptions(dir_.path())),
                                       EngineThread::Config{.background_sweeps = false}, &metrics_);
    engine_thread_->Start();
    api_ = std::make_unique<HttpApi>(
        *engine_thread_, metrics_,
        ApiConfig{.auth_token = std::move(auth_token), .manual_clock = true, .backup_dir = ""});
    api_->SetAuthorities({kAuthority});
  }
  ~Api() {
    api_.reset();
    engine_thread_->Stop();
    (void)engine_thread_->StoppedEngine().Close();
  }
  const HttpApi& api() const { return *api_; }
  Reply Get(std::string target) const {
    HttpRequest req;
    req.method = HttpMethod::kGet;
    req.target = std::move(target);
    req.host = kAuthority;
    return api_->DispatchAndWait(std::move(req));
  }

 private:
  TempDir dir_;
  ServerMetrics metrics_;
  std::unique_ptr<EngineThread> engine_thread_;
  std::unique_ptr<HttpApi> api_;
};

TEST_CASE(
    "every route is documented in docs/openapi.json, and every documented operation is a route") {
  Api api;
  std::set<std::string> routes;
  for (const Router::RouteEntry& route : api.api().Routes()) {
    INFO(route.path_template);
    REQUIRE(
        routes.insert(std::string(MethodName(route.method)) + " " + route.path_template).second);
  }
  const std::set<std::string> documented = DocumentedOperations(OpenApiDocument());
  std::set<std::string> undocumented;
  std::set<std::string> unrouted;
  for (const std::string& r : routes) {
    if (!documented.contains(r)) undocumented.insert(r);
  }
  for (const std::string& d : documented) {
    if (!routes.contains(d)) unrouted.insert(d);
  }
  INFO("routes without an operation in docs/openapi.json:" << Join(undocumented));
  INFO("operations in docs/openapi.json without a route:" << Join(unrouted));
  CHECK(undocumented.empty());
  CHECK(unrouted.empty());
  // The comparison sees the whole table: the routes of SPEC §9 are there.
  CHECK(routes.contains("GET /v1/transitions"));
  CHECK(routes.contains("DELETE /v1/buckets/{}/members/{}"));
  CHECK(routes.contains("GET /v1/openapi.json"));
}

TEST_CASE("GET /v1/openapi.json serves the repo's document byte for byte, without a token") {
  Api api("secret");
  const Reply reply = api.Get("/v1/openapi.json");
  CHECK(reply.http_status == 200);
  CHECK(reply.content_type == "application/json");
  CHECK(reply.body == ReadFile(BUCKETD_OPENAPI_JSON));
  CHECK(reply.route == "openapi");
  // The other /v1 routes still need the token.
  CHECK(api.Get("/v1/state").http_status == 401);
}

TEST_CASE("the embedded document is an OpenAPI 3.1 document with the error shape as a schema") {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  const std::string_view document = OpenApiDocument();
  REQUIRE(parser.parse(document.data(), document.size()).get(root) == simdjson::SUCCESS);
  std::string_view version;
  REQUIRE(root["openapi"].get(version) == simdjson::SUCCESS);
  CHECK(version.starts_with("3.1."));
  simdjson::dom::object error;
  CHECK(root.at_pointer("/components/schemas/Error").get(error) == simdjson::SUCCESS);
  CHECK(root.at_pointer("/components/schemas/CursorAheadError").get(error) == simdjson::SUCCESS);
}

}  // namespace
}  // namespace bucketd::server
