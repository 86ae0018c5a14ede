#pragma once
// The /v1 routes of SPEC §9, plus /metrics, /healthz and /readyz, and the OpenAPI document
// that describes them (GET /v1/openapi.json, docs/openapi.json). Handlers parse on the transport's
// thread, hand the engine call to the owner thread, and answer when it calls back: no
// transport thread ever waits for the engine, a group commit, or a long-poll.
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine_thread.h"
#include "http_request.h"
#include "http_route.h"
#include "http_service.h"
#include "prometheus.h"

namespace bucketd::server {

class WebhookDeliverer;

struct ApiConfig {
  std::string auth_token;  // empty: /v1 is open, and Host and Origin are checked
  bool manual_clock = false;
  // Where POST /v1/admin/backup writes (one directory per backup, named by the time);
  // empty: the route is refused. Never a client's path: the client names nothing on disk.
  std::string backup_dir;
};

class HttpApi final : public HttpService {
 public:
  HttpApi(EngineThread& engine, ServerMetrics& metrics, ApiConfig config);

  // The "host:port" names of this server that a tokenless request's Host and Origin may
  // use (the listen address, localhost, 127.0.0.1 and [::1] at the bound port).
  // REQUIRES: not serving yet.
  void SetAuthorities(std::vector<std::string> authorities);

  // The delivery worker of /v1/subscriptions (its policy checks new URLs; it is kicked when
  // subscriptions change or the manual clock moves). Without one, the routes answer 503.
  // REQUIRES: not serving yet; `webhooks` outlives the serving.
  void SetWebhooks(WebhookDeliverer* webhooks) { webhooks_ = webhooks; }

  // The refusal of a request on its headers alone, before its body is read (Router::Screen).
  std::optional<Reply> Screen(const HttpRequest& req) const override;
  // Serves one request: `respond` gets its reply exactly once, from any thread; `post` runs
  // the rest of the work on the transport's executor (see Exchange).
  void Dispatch(HttpRequestPtr req, Exchange::Poster post,
                Exchange::Responder respond) const override;
  // Serves one request and waits for its reply on the caller's thread: a harness without a
  // socket (tests, fuzzing). Needs the EngineThread started.
  Reply DispatchAndWait(HttpRequest req) const;
  void RecordServed(std::string_view route, int http_status, double seconds) const override;
  // Every route this API serves (docs/openapi.json must describe exactly these).
  std::vector<Router::RouteEntry> Routes() const;
  // From now on /readyz answers 503: a load balancer stops sending new work while the
  // in-flight requests finish. Thread-safe; called once a stop signal arrives.
  void BeginShutdown() { shutting_down_ = true; }

 private:
  void AddRoutes();

  void PostEvents(const HttpRequestPtr& req, const ExchangePtr& ex);
  void DeleteContact(const HttpRequestPtr& req, const ExchangePtr& ex);
  void DefineBucket(const HttpRequestPtr& req, const ExchangePtr& ex, DefineMode mode);
  void ListBuckets(const HttpRequestPtr& req, const ExchangePtr& ex);
  void GetBucket(const HttpRequestPtr& req, const ExchangePtr& ex);
  void PatchBucket(const HttpRequestPtr& req, const ExchangePtr& ex);
  void DeleteBucket(const HttpRequestPtr& req, const ExchangePtr& ex);
  void CountMembers(const HttpRequestPtr& req, const ExchangePtr& ex);
  void BucketMetricsOf(const HttpRequestPtr& req, const ExchangePtr& ex);
  void BucketHistory(const HttpRequestPtr& req, const ExchangePtr& ex);
  void ListMembers(const HttpRequestPtr& req, const ExchangePtr& ex);
  void GetMember(const HttpRequestPtr& req, const ExchangePtr& ex);
  void AddMember(const HttpRequestPtr& req, const ExchangePtr& ex);
  void RemoveMember(const HttpRequestPtr& req, const ExchangePtr& ex);
  void UserMemberships(const HttpRequestPtr& req, const ExchangePtr& ex);
  void GetUser(const HttpRequestPtr& req, const ExchangePtr& ex);
  void PreviewBucket(const HttpRequestPtr& req, const ExchangePtr& ex);
  void ExplainMembership(const HttpRequestPtr& req, const ExchangePtr& ex);
  void ReadTransitions(const HttpRequestPtr& req, const ExchangePtr& ex);
  void AdvanceClock(const HttpRequestPtr& req, const ExchangePtr& ex);
  void Sweep(const HttpRequestPtr& req, const ExchangePtr& ex);
  void TakeSnapshot(const HttpRequestPtr& req, const ExchangePtr& ex);
  void Backup(const HttpRequestPtr& req, const ExchangePtr& ex);
  void State(const HttpRequestPtr& req, const ExchangePtr& ex);
  void CreateSubscription(const HttpRequestPtr& req, const ExchangePtr& ex);
  void ListSubscriptions(const HttpRequestPtr& req, const ExchangePtr& ex);
  void GetSubscription(const HttpRequestPtr& req, const ExchangePtr& ex);
  void DeleteSubscription(const HttpRequestPtr& req, const ExchangePtr& ex);
  void PrometheusMetrics(const HttpRequestPtr& req, const ExchangePtr& ex);
  void Healthz(const HttpRequestPtr& req, const ExchangePtr& ex);
  void Readyz(const HttpRequestPtr& req, const ExchangePtr& ex);

  // Runs work(engine) on the owner thread; once durable, answer(result) -> Reply runs on the
  // transport's executor (rendering JSON never holds up the owner thread).
  template <typename Work, typename Answer>
  void OnEngine(const ExchangePtr& ex, Work work, Answer answer);
  // GET /v1/transitions: a page read, or a long-poll that reads again from its advanced
  // cursor each time the stream grows, until something matches or the deadline.
  struct TransitionsQuery {
    uint64_t after = 0;
    uint64_t limit = 0;
    TransitionFilter filter;
  };
  void PollTransitions(const ExchangePtr& ex, TransitionsQuery query,
                       std::chrono::steady_clock::time_point deadline) const;
  // A page, or the error of its read (409 with the stream's last seq and id for a cursor
  // beyond the end).
  Reply TransitionsReply(const TransitionsPage& page, const Status& status) const;

  EngineThread& engine_;
  ServerMetrics& metrics_;
  const ApiConfig config_;
  Router router_;
  std::atomic<bool> shutting_down_{false};
  WebhookDeliverer* webhooks_ = nullptr;
};

}  // namespace bucketd::server
