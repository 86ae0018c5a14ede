// Webhook subscriptions against the real `bucketd`, delivering to a receiver in this test on
// a free loopback port: order, retries, signatures, filters, restarts (SIGTERM, SIGKILL), an
// outage of minutes on the manual clock, a dead receiver that ingest does not wait for, and
// refusals naming the field.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
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
using Server = bucketd::testing::Sidecar;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "bucketd-webhook-test-XXXXXX").string();
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

std::string Str(simdjson::dom::element e) { return std::string(e.get_string().value()); }

std::string Hmac(const std::string& key, const std::string& message) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest, &length);
  std::string hex;
  char byte[3];
  for (unsigned i = 0; i < length; ++i) {
    std::snprintf(byte, sizeof byte, "%02x", digest[i]);
    hex += byte;
  }
  return hex;
}

// One POST the receiver got.
struct Delivery {
  std::string path;
  std::string body;
  std::string signature;
  int answered = 0;
  std::vector<uint64_t> seqs;
  std::vector<std::string> keys;  // "seq kind bucket"
};

// A webhook receiver on a free loopback port. `answer` decides each status (by the count of
// deliveries to that path so far).
class Receiver {
 public:
  Receiver() {
    server_.Post(R"(/.*)", [this](const httplib::Request& req, httplib::Response& res) {
      Delivery d;
      d.path = req.path;
      d.body = req.body;
      d.signature = req.get_header_value("Bucketd-Signature");
      simdjson::dom::parser parser;
      simdjson::dom::element root;
      if (parser.parse(req.body).get(root) == 0) {
        simdjson::dom::array transitions = root["transitions"].get_array().value();
        for (simdjson::dom::element t : transitions) {
          d.seqs.push_back(t["seq"].get_uint64().value());
          d.keys.push_back(std::to_string(d.seqs.back()) + " " + Str(t["kind"]) + " " +
                           Str(t["bucketId"]));
        }
      }
      std::lock_guard lock(mu_);
      d.answered = answer_(d.path, count_[d.path]++);
      res.status = d.answered;
      res.set_content("{}", "application/json");
      deliveries_.push_back(std::move(d));
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~Receiver() {
    server_.stop();
    thread_.join();
  }
  void SetAnswer(std::function<int(const std::string&, int)> answer) {
    std::lock_guard lock(mu_);
    answer_ = std::move(answer);
  }
  std::vector<Delivery> Deliveries() {
    std::lock_guard lock(mu_);
    return deliveries_;
  }
  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::function<int(const std::string&, int)> answer_ = [](const std::string&, int) { return 200; };
  std::map<std::string, int> count_;
  std::vector<Delivery> deliveries_;
};

httplib::Result Post(httplib::Client& c, const std::string& path, const std::string& body) {
  return c.Post(path.c_str(), body, "application/json");
}

void RequireStatus(const httplib::Result& res, int status) {
  REQUIRE(res);
  INFO(res->body);
  REQUIRE(res->status == status);
}

void RequireRefused(const httplib::Result& res, std::string_view field) {
  REQUIRE(res);
  INFO(res->body);
  REQUIRE(res->status == 400);
  Json body(res->body);
  CHECK(Str(body["error"]["field"]) == field);
}

const char* kPower =
    R"({"id":"power","name":"Power","criteria":{"type":"event","eventName":"used",)"
    R"("check":"count","operator":"gte","value":1,"within":"365d"}})";
const char* kBuyers =
    R"({"id":"buyers","name":"Buyers","criteria":{"type":"event","eventName":"bought",)"
    R"("check":"count","operator":"gte","value":1,"within":"365d"}})";

void Define(httplib::Client& c) {
  RequireStatus(Post(c, "/v1/buckets", kPower), 201);
  RequireStatus(Post(c, "/v1/buckets", kBuyers), 201);
}

// Users `from`..`to`-1: each enters power; even ones also buyers.
void Ingest(httplib::Client& c, int from, int to) {
  std::string batch = "[";
  for (int i = from; i < to; ++i) {
    const std::string user = "u" + std::to_string(i);
    batch += (i > from ? "," : "") + std::string(R"({"userId":")") + user + R"(","event":"used"})";
    if (i % 2 == 0) batch += R"(,{"userId":")" + user + R"(","event":"bought"})";
  }
  batch += "]";
  RequireStatus(Post(c, "/v1/events", batch), 200);
}

struct Sub {
  std::string id;
  std::string secret;
};

Sub Subscribe(httplib::Client& c, const std::string& body) {
  auto res = Post(c, "/v1/subscriptions", body);
  RequireStatus(res, 201);
  Json json(res->body);
  return {Str(json["id"]), Str(json["secret"])};
}

// The whole stream as "seq kind bucket", read with GET /v1/transitions.
std::vector<std::string> Stream(httplib::Client& c) {
  auto res = c.Get("/v1/transitions?after=0&limit=10000");
  RequireStatus(res, 200);
  Json json(res->body);
  std::vector<std::string> out;
  simdjson::dom::array transitions = json["transitions"].get_array().value();
  for (simdjson::dom::element t : transitions) {
    out.push_back(std::to_string(t["seq"].get_uint64().value()) + " " + Str(t["kind"]) + " " +
                  Str(t["bucketId"]));
  }
  return out;
}

uint64_t Field(httplib::Client& c, const std::string& id, const char* field) {
  auto res = c.Get(("/v1/subscriptions/" + id).c_str());
  RequireStatus(res, 200);
  Json json(res->body);
  return json[field].get_uint64().value();
}

// Waits (a liveness bound, not a timing assertion) until `done`, moving the manual clock by
// `step` each round so that backoffs come due.
void Await(httplib::Client& c, const std::function<bool()>& done,
           int64_t step_ms = 11 * 60 * 1000) {
  static int64_t now = 0;
  if (now == 0) now = 1767225600000;  // kSidecarStart
  for (int round = 0; round < 600; ++round) {
    if (done()) return;
    if (step_ms > 0) {
      now += step_ms;
      RequireStatus(Post(c, "/v1/clock", R"({"now":)" + std::to_string(now) + "}"), 200);
    }
    std::this_thread::sleep_for(50ms);
  }
  auto res = c.Get("/v1/subscriptions");
  FAIL("timed out waiting: " << (res ? res->body : std::string("no answer")));
}

// The accepted deliveries' transitions, in order; each failed delivery's seqs must be a
// prefix of the next delivery's to the same path (duplicates only as retries).
std::vector<std::string> Accepted(const std::vector<Delivery>& deliveries, const std::string& path,
                                  const std::string& secret) {
  std::vector<std::string> out;
  const Delivery* failed = nullptr;
  for (const Delivery& d : deliveries) {
    if (d.path != path) continue;
    // The signature: t=<unix>,v1=<hex of HMAC-SHA256(secret, t + "." + body)>.
    const size_t comma = d.signature.find(",v1=");
    REQUIRE(d.signature.starts_with("t="));
    REQUIRE(comma != std::string::npos);
    const std::string t = d.signature.substr(2, comma - 2);
    CHECK(d.signature.substr(comma + 4) == Hmac(secret, t + "." + d.body));
    if (failed != nullptr) {
      REQUIRE(d.seqs.size() >= failed->seqs.size());
      CHECK(std::equal(failed->seqs.begin(), failed->seqs.end(), d.seqs.begin()));
    }
    failed = d.answered / 100 == 2 ? nullptr : &d;
    if (d.answered / 100 == 2) out.insert(out.end(), d.keys.begin(), d.keys.end());
  }
  return out;
}

}  // namespace

TEST_CASE(
    "deliveries arrive in seq order, signed, filtered, retried after failures; the cursor "
    "survives SIGTERM and SIGKILL") {
  TempDir dir;
  Receiver receiver;
  // The first three deliveries to /all fail.
  receiver.SetAnswer(
      [](const std::string& path, int n) { return path == "/all" && n < 3 ? 500 : 200; });
  Sub all, entered;
  {
    Server server(dir.path, {"--webhook-batch-max", "7"});
    httplib::Client c = server.Client();
    Define(c);
    all = Subscribe(c, R"({"url":")" + receiver.Url("/all") + R"("})");
    entered = Subscribe(
        c, R"({"url":")" + receiver.Url("/buyers") +
               R"(","bucket":"buyers","kinds":["entered"],"secret":"0123456789abcdef-test"})");
    CHECK(entered.secret == "0123456789abcdef-test");
    CHECK(all.secret.starts_with("whsec_"));
    Ingest(c, 0, 20);
    const uint64_t last = Stream(c).size();
    REQUIRE(last == 30);
    Await(c, [&] {
      return Field(c, all.id, "loggedCursor") == last &&
             Field(c, entered.id, "loggedCursor") == last;
    });
    CHECK(Field(c, all.id, "lag") == 0);
    CHECK(Field(c, all.id, "delivered") == 30);
    CHECK(Field(c, entered.id, "delivered") == 10);
    // The secret is shown once: not in GET.
    auto got = c.Get(("/v1/subscriptions/" + all.id).c_str());
    CHECK(got->body.find("secret") == std::string::npos);
    auto metrics = c.Get("/metrics");
    CHECK(metrics->body.find("bucketd_webhook_lag_transitions{subscription=\"" + all.id +
                             "\"} 0") != std::string::npos);
    CHECK(metrics->body.find("bucketd_webhook_failed_attempts_total{subscription=\"" + all.id +
                             "\"} 3") != std::string::npos);
    CHECK(server.Stop(SIGTERM) == 0);
  }
  {
    Server server(dir.path, {"--webhook-batch-max", "7"});
    httplib::Client c = server.Client();
    Ingest(c, 20, 24);
    const uint64_t last = Stream(c).size();
    Await(c, [&] {
      return Field(c, all.id, "loggedCursor") == last &&
             Field(c, entered.id, "loggedCursor") == last;
    });
    server.Stop(SIGKILL);
  }
  Server server(dir.path, {"--webhook-batch-max", "7"});
  httplib::Client c = server.Client();
  Ingest(c, 24, 30);
  const std::vector<std::string> stream = Stream(c);
  Await(c, [&] {
    return Field(c, all.id, "cursor") == stream.size() &&
           Field(c, entered.id, "cursor") == stream.size();
  });
  // Every transition once, in order, across both restarts.
  CHECK(Accepted(receiver.Deliveries(), "/all", all.secret) == stream);
  std::vector<std::string> buyers_entered;
  for (const std::string& t : stream) {
    if (t.ends_with(" entered buyers")) buyers_entered.push_back(t);
  }
  CHECK(Accepted(receiver.Deliveries(), "/buyers", entered.secret) == buyers_entered);
  for (const Delivery& d : receiver.Deliveries()) CHECK(d.seqs.size() <= 7);
}

TEST_CASE("a receiver outage of minutes: retries back off on the manual clock, then catch up") {
  TempDir dir;
  Receiver receiver;
  receiver.SetAnswer([](const std::string&, int) { return 503; });
  Server server(dir.path);
  httplib::Client c = server.Client();
  Define(c);
  const Sub sub = Subscribe(c, R"({"url":")" + receiver.Url("/hook") + R"("})");
  Ingest(c, 0, 10);
  Await(
      c, [&] { return Field(c, sub.id, "consecutiveFailures") >= 1; }, 0);
  {
    auto res = c.Get(("/v1/subscriptions/" + sub.id).c_str());
    Json json(res->body);
    CHECK(Str(json["lastError"]) == "HTTP 503");
    CHECK(json["nextAttemptAt"].is_string());
    CHECK(json["lag"].get_uint64().value() == 15);
  }
  // Minutes of outage, the clock moved a minute at a time: each retry that comes due fails.
  Await(
      c, [&] { return Field(c, sub.id, "consecutiveFailures") >= 6; }, 60 * 1000);
  CHECK(Field(c, sub.id, "cursor") == 0);
  CHECK(Field(c, sub.id, "delivered") == 0);
  receiver.SetAnswer([](const std::string&, int) { return 200; });
  Await(c, [&] { return Field(c, sub.id, "loggedCursor") == 15; });
  CHECK(Accepted(receiver.Deliveries(), "/hook", sub.secret) == Stream(c));
}

TEST_CASE("a dead receiver does not hold up ingest") {
  TempDir dir;
  Server server(dir.path, {"--webhook-timeout", "30s"});
  httplib::Client c = server.Client();
  Define(c);
  // A receiver that takes connections into its backlog and never answers: each delivery
  // waits for the whole --webhook-timeout.
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(listen(listener, 64) == 0);
  REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  const int dead = ntohs(address.sin_port);
  Subscribe(c, R"({"url":"http://127.0.0.1:)" + std::to_string(dead) + R"(/hook"})");
  for (int round = 0; round < 20; ++round) Ingest(c, round * 50, round * 50 + 50);
  CHECK(Stream(c).size() == 1500);
  RequireStatus(c.Get("/v1/state"), 200);
  auto res = c.Get("/v1/subscriptions");
  RequireStatus(res, 200);
  Json json(res->body);
  CHECK(json["subscriptions"].get_array().value().size() == 1);
  close(listener);
}

TEST_CASE("bad subscription input is refused naming the field, and nothing changes") {
  TempDir dir;
  Server server(dir.path);
  httplib::Client c = server.Client();
  auto state = [&] {
    auto res = c.Get("/v1/state");
    Json json(res->body);
    return json["logSeq"].get_uint64().value();
  };
  const uint64_t before = state();
  RequireRefused(Post(c, "/v1/subscriptions", R"({"url":"http://10.0.0.7/hook"})"), "url");
  RequireRefused(Post(c, "/v1/subscriptions", R"({"url":"http://example.com/hook"})"), "url");
  RequireRefused(Post(c, "/v1/subscriptions", R"({"url":"http://169.254.169.254/"})"), "url");
  RequireRefused(Post(c, "/v1/subscriptions", R"({"url":"https://localhost/"})"), "url");
  RequireRefused(Post(c, "/v1/subscriptions", R"({"bucket":"power"})"), "url");
  RequireRefused(Post(c, "/v1/subscriptions", R"({"url":42})"), "url");
  RequireRefused(Post(c, "/v1/subscriptions", R"({"url":"http://localhost/","kinds":["joined"]})"),
                 "kinds");
  RequireRefused(Post(c, "/v1/subscriptions", R"({"url":"http://localhost/","secret":"short"})"),
                 "secret");
  RequireRefused(Post(c, "/v1/subscriptions", R"({"url":"http://localhost/","bucket":"a b"})"),
                 "bucket");
  RequireRefused(Post(c, "/v1/subscriptions", R"({"url":"http://localhost/","after":5})"), "after");
  RequireRefused(Post(c, "/v1/subscriptions", R"({"url":"http://localhost/","colour":"red"})"),
                 "colour");
  CHECK(state() == before);
  CHECK(c.Get("/v1/subscriptions/sub_nope")->status == 404);
  CHECK(c.Delete("/v1/subscriptions/sub_nope")->status == 404);
  const Sub sub = Subscribe(c, R"({"url":"http://localhost:1/"})");
  RequireStatus(c.Delete(("/v1/subscriptions/" + sub.id).c_str()), 200);
  CHECK(c.Get(("/v1/subscriptions/" + sub.id).c_str())->status == 404);
}

TEST_CASE("--webhook-allow-hosts admits a named host") {
  TempDir dir;
  Server server(dir.path, {"--webhook-allow-hosts", "hooks.example.com,10.0.0.7"});
  httplib::Client c = server.Client();
  RequireStatus(Post(c, "/v1/subscriptions", R"({"url":"http://hooks.example.com/in"})"), 201);
  RequireStatus(Post(c, "/v1/subscriptions", R"({"url":"http://10.0.0.7:8080/in"})"), 201);
  RequireRefused(Post(c, "/v1/subscriptions", R"({"url":"http://10.0.0.8/in"})"), "url");
}
