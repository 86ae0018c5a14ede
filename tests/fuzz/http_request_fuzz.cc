// Fuzzes the HTTP request path from the raw bytes on: the input is one request as a client
// sends it. It goes through what the server does with it (tools/bucketd): Beast's parser with
// the server's header and body limits, the framing the server refuses beyond the parser
// (http_framing.h), the request the API sees, the API's screening on the headers alone
// (method, route, auth, Host and Origin, content type), then the route's handler on a real
// engine (HttpApi::DispatchAndWait, through the owner thread as in the server).
//
// Beyond "no crash, no undefined behaviour, no leak", it checks what a client relies on:
// every refusal is a 4xx with a JSON error body naming its code; every answer is one the
// routes give (no 500, no 503 while the engine is healthy); a JSON answer is valid JSON.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include <simdjson.h>
#include <boost/asio/buffer.hpp>

#include "bucketd/engine.h"
#include "bucketd/limits.h"
#include "engine/base/check.h"
#include "engine_thread.h"
#include "http_api.h"
#include "http_framing.h"
#include "prometheus.h"

namespace bucketd::server {
namespace {

// The authority the seeds' Host names (tokenless mode checks Host against it).
constexpr std::string_view kAuthority = "127.0.0.1:7411";
// A fresh engine every so many inputs: the state the accepted events build would otherwise
// grow with the run.
constexpr uint64_t kInputsPerEngine = 20000;

// A manual-clock engine on a temp dir, its owner thread and the API, as bucketd runs them.
class Harness {
 public:
  Harness() {
    // Under $TMPDIR, which tools/run-fuzz.sh points at a dir it removes: the last harness is
    // never destroyed (see below).
    std::string pattern =
        (std::filesystem::temp_directory_path() / "bucketd-http-fuzz-XXXXXX").string();
    BUCKETD_CHECK(mkdtemp(pattern.data()) != nullptr);
    dir_ = pattern;
    Options options;
    options.data_dir = dir_;
    options.clock = ClockMode::kManual;
    options.start_time_ms = 1793491200000;  // 2026-11-01
    options.durability = Durability::kAsync;
    options.snapshot_every_records = 0;
    options.snapshot_every_ms = 0;
    std::unique_ptr<Engine> engine;
    BUCKETD_CHECK_MSG(Engine::Open(options, &engine).ok(), "opening the fuzz engine");
    engine_thread_ = std::make_unique<EngineThread>(
        std::move(engine), EngineThread::Config{.background_sweeps = false}, &metrics_);
    engine_thread_->Start();
    api_ = std::make_unique<HttpApi>(*engine_thread_, metrics_,
                                     ApiConfig{.auth_token = "", .manual_clock = true});
  }
  ~Harness() {
    api_.reset();
    engine_thread_->Stop();
    (void)engine_thread_->StoppedEngine().Close();
    engine_thread_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  HttpApi& api() { return *api_; }

 private:
  std::string dir_;
  ServerMetrics metrics_;
  std::unique_ptr<EngineThread> engine_thread_;
  std::unique_ptr<HttpApi> api_;
};

bool IsJson(std::string_view text) {
  static simdjson::dom::parser parser;
  simdjson::dom::element root;
  return parser.parse(text.data(), text.size()).get(root) == simdjson::SUCCESS;
}

void CheckRefusal(const HttpError& error) {
  BUCKETD_CHECK_MSG(error.http_status >= 400 && error.http_status < 500,
                    "a framing refusal is a 4xx: " + std::to_string(error.http_status));
}

void CheckReply(const Reply& reply) {
  BUCKETD_CHECK_MSG(reply.http_status >= 200 && reply.http_status < 500,
                    "an answer of the routes on a healthy engine: " +
                        std::to_string(reply.http_status) + " " + reply.body);
  if (reply.content_type == "application/json") {
    BUCKETD_CHECK_MSG(IsJson(reply.body), "a JSON answer that is not JSON: " + reply.body);
    if (reply.http_status >= 400) {
      BUCKETD_CHECK_MSG(reply.body.find("\"code\"") != std::string::npos,
                        "an error without its code: " + reply.body);
    }
  }
}

}  // namespace
}  // namespace bucketd::server

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bucketd;
  using namespace bucketd::server;
  // Never destroyed at exit: RocksDB's own statics (its default Env's thread pools) may be
  // gone by then, and closing the engine after them crashes.
  static Harness* harness = nullptr;
  static uint64_t inputs = 0;
  if (inputs++ % kInputsPerEngine == 0) {
    delete harness;
    harness = new Harness();
  }

  RequestParser parser;
  parser.header_limit(kRequestHeaderBytesMax);
  parser.body_limit(kRequestBodyBytesMax);
  parser.eager(true);
  boost::beast::error_code ec;
  size_t used = 0;
  // The whole input at once, as if it had all arrived: the parser takes what it can.
  while (used < size && !parser.is_done()) {
    const size_t taken = parser.put(boost::asio::buffer(data + used, size - used), ec);
    if (ec == boost::beast::http::error::need_more) ec = {};
    if (ec || taken == 0) break;
    used += taken;
  }
  if (!parser.is_done() && used == size && !ec) {
    // The input ended: a body without its end is what a client that went away leaves.
    parser.put_eof(ec);
  }
  if (ec) {
    if (ec != boost::beast::http::error::partial_message &&
        ec != boost::beast::http::error::need_more) {
      CheckRefusal(ParseError(ec));
    }
    return 0;
  }
  if (!parser.is_header_done()) return 0;
  if (std::optional<HttpError> error = CheckFraming(parser)) {
    CheckRefusal(*error);
    return 0;
  }
  std::shared_ptr<HttpRequest> request = RequestFromHeader(parser, std::string(kAuthority));
  if (std::optional<Reply> refusal = harness->api().Screen(*request)) {
    BUCKETD_CHECK(refusal->http_status >= 400 && refusal->http_status < 500);
    CheckReply(*refusal);
    return 0;
  }
  if (!parser.is_done()) return 0;
  request->body = std::move(parser.get().body());
  CheckReply(harness->api().DispatchAndWait(std::move(*request)));
  return 0;
}
